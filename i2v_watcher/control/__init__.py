"""The operators' controls over the workers of a share: pause, resume and drain, as files in
work/.control/ that every worker reads before each claim (so they hold across restarts and hosts)."""
