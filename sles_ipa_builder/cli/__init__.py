"""The command line: the verbs, their results on stdout, the doctor."""
