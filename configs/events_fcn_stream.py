"""Spiking-FCN trained on streams of the embedded `events` recordings (the settings of events_deeplab_stream.py).

    python train.py --config configs/events_fcn_stream.py --workdir runs/events_fcn_stream
    python evaluate.py --config configs/events_fcn_stream.py --workdir runs/events_fcn_stream --analyses=streaming

Expected: validation MIoU 0.466 in windows and 0.464 streamed after 5,000 steps
(trained in windows: 0.410 and 0.234), ~8 min on 2 CPU cores.
"""

from configs import events_deeplab_stream, events_fcn


def get_config():
    return events_deeplab_stream.for_streams(events_fcn.get_config())
