"""The bundled demo: sample feeds, a local feed server and the ``cascade demo`` runner."""
