"""What an operator runs beside the services: `status`, `retry` and the failure reports they read,
`submit`, and `doctor`."""
