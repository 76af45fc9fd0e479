"""What the pages share: the session, widgets, and the Plotly/HTML charts (the only place that builds figures)."""
