"""The conversion pipeline: OCI layers in, converted layer artefacts out, the destination layout written.

- engine.py: the layer engine seam (one source layer in, its artefacts out), chosen once per run;
  artefacts.py: what an engine is given and gives back;
- native.py, turbo.py: the overlaybd and TurboOCI engines' shared parts, and our own engines;
  tools_engines.py, tools.py: the engines that run the overlaybd tools;
- workdir.py: converted layers kept by key until the destination holds them;
- worker.py: images' layers converted in worker processes (from the work directory, the cache, or an engine);
- pipeline.py: plan, workers, outputs (or the cache's), publish; progress.py: what the person running it sees.
"""
