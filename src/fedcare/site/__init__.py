"""The site: application, middleware, runtime and preprocessing."""
