# The API's entry point in the real product; the example serves static health pages with busybox httpd.
VERSION = "0.1.0"
