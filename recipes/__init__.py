"""The shipped training recipes, as package data: ``dataprep train noise_stream`` finds them by name."""
