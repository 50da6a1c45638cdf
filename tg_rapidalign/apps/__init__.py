"""Applications built on the core package (nothing in the core imports them):

* :mod:`.denoising`: the demo's E(3)-equivariant molecule denoiser, trained with
  the alignment loss, and its report;
* :mod:`.calibration`: fitting a kernel so that its loss ranks corrupted
  structures by corruption level;
* :mod:`.datasets`: built-in molecules (ASE's G2) and synthetic shapes;
* :mod:`.models`: the small reference models of the demo and the examples;
* :mod:`.plotting`: the figures of the CLI;
* :mod:`.cli`: the ``rapidalign`` command.
"""
