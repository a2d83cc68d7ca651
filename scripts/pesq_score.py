#!/usr/bin/env python3
"""PESQ-WB (ITU-T P.862.2) of a degraded recording against its reference.

Usage: scripts/pesq_score.py REFERENCE.wav DEGRADED.wav
Both files must be 16 kHz mono 16-bit (what qvoice-media-bench writes). Prints the MOS-LQO score.
Needs the PyPI packages `pesq` and `numpy`:  pip install pesq numpy
Exit status 2 when they are missing, so callers can report "not available" instead of a number.
"""
import sys
import wave

try:
    import numpy as np
    from pesq import pesq
except ImportError:
    print("pesq/numpy not installed: pip install pesq numpy", file=sys.stderr)
    sys.exit(2)


def load(path):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{path}: need mono 16-bit PCM")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    return rate, data


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    r_rate, ref = load(sys.argv[1])
    d_rate, deg = load(sys.argv[2])
    if r_rate != 16000 or d_rate != 16000:
        sys.exit("PESQ-WB needs 16 kHz files")
    n = min(len(ref), len(deg))
    print(f"{pesq(16000, ref[:n], deg[:n], 'wb'):.3f}")


if __name__ == "__main__":
    main()
