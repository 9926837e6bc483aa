"""Live ipywidgets over a `wsnb.Client`: they observe and command it, never own protocol logic.

Each panel redraws from wsnb's event-loop thread at most 10 times a second,
only when what it shows changed, and stops when closed.
"""

from wsnb.widgets.chaos import ChaosPanel
from wsnb.widgets.connection import ConnectionPanel
from wsnb.widgets.dashboard import Dashboard
from wsnb.widgets.doctor_panel import DoctorPanel
from wsnb.widgets.send import SendPanel
from wsnb.widgets.timeline_panel import TimelinePanel

__all__ = ["ChaosPanel", "ConnectionPanel", "Dashboard", "DoctorPanel", "SendPanel",
           "TimelinePanel"]
