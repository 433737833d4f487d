"""Views: core ipywidgets with SVG charts (no custom JavaScript), or static SVG outputs; live views are callbacks."""
