"""The screening service: web page and JSON API over the registry's champion."""
