"""sslab.datasets: modules here register themselves; `sslab.core.plugins.load_all()` imports them all."""
