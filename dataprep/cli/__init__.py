"""The ``dataprep`` command line: one thin Click module per command over the core library."""
