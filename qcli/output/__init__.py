"""Views of the result objects: rich console views and file writers (CSV, Markdown, JUnit, plot)."""
