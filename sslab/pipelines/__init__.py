"""Input pipelines per modality (registered in ``sslab.core.registry.PIPELINES``; see ``sslab.core.pipeline``)."""
