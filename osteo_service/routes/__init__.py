"""The service's routers: the page (HTML), the JSON API and its health answer; the steps they share."""
