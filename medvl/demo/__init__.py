"""The Gradio demo: :mod:`medvl.demo.app` wires widgets to :mod:`medvl.demo.session` (one
visitor's scan and answers), :mod:`medvl.demo.viewer` (planes, windows, overlays) and
:mod:`medvl.demo.uploads` (files, series and zips). Only ``app`` imports Gradio."""
