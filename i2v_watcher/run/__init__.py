"""The stages of one claimed job: check, generate, post-process (encode and verify), publish or fail;
and the overlap of stages in a pipelined worker (stages)."""
