"""Regenerate Vela's reports used by tests/test_target_ethosu.py (fast tests parse these files, no Vela needed).

    python tests/data/vela/regenerate.py      # ethos-u-vela 5.2.0

For each accelerator and fixture it runs, through lowbit's ethos-u target (EthosUTarget.vela_args):
    vela tests/data/tflite/FIXTURE.tflite --accelerator-config ACCEL --config Arm/vela.ini
         --system-config SYS --memory-mode MEM --output-dir tests/data/vela/ACCEL
         --verbose-performance --verbose-cycle-estimate --show-cpu-operations
with SYS/MEM = Ethos_U55_High_End_Embedded/Shared_Sram (U55), Ethos_U65_Client_Server/Dedicated_Sram_384KB
(U65), keeps the summary CSV, the per-layer CSV and stdout (FIXTURE_vela_stdout.txt), and drops the binary.
"""
import os

from lowbit.targets import get_target

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = ["small_cnn_int8", "transformer_block_int8", "unsupported_cumsum", "unsupported_float"]
ACCELERATORS = ["ethos-u55-128", "ethos-u65-256"]

if __name__ == "__main__":
    for accel in ACCELERATORS:
        out = os.path.join(HERE, accel)
        for fixture in FIXTURES:
            get_target(accel).compile_tflite(os.path.join(HERE, "..", "tflite", f"{fixture}.tflite"), out)
            os.remove(os.path.join(out, f"{fixture}_vela.tflite"))
