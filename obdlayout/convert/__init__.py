"""The conversion pipeline: OCI layers in, converted layer artefacts out, the destination layout written.

- engine.py: the layer engine seam (one source layer in, its artefacts out), chosen once per run;
  artefacts.py: what an engine is given and gives back;
- native.py: the native engine, our ext4 writer making overlaybd layer blobs;
- workdir.py: converted layers kept by key until the destination holds them;
- pipeline.py: plan, engines over every image's layers in worker processes, publish; progress.py: what the
  person running it sees.
"""
