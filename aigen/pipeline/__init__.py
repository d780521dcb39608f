"""Plan the assets of a request, run them in threads, keep the files atomically."""
