"""``python demo/app.py``: medvl's Gradio demo (the app lives in :mod:`medvl.demo.app`).

``MEDVL_DEMO_MODEL`` names the checkpoint (default: a tiny random Qwen2.5-VL); ``medvl demo
--model DIR`` does the same from the command line.
"""

from medvl.demo.app import build_app, main

__all__ = ["build_app", "main"]

if __name__ == "__main__":
    main()
