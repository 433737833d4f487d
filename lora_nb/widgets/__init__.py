"""ipywidgets + plotly FigureWidget views. A live view is a training callback."""
