"""The published experiment done right (General vs Partials vs aggregations), batch prediction, the demo."""
