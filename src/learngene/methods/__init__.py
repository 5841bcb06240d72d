"""Built-in methods. Importing this package registers each of them (one import per line)."""

from . import scratch  # noqa: F401
from . import pretrain_finetune  # noqa: F401
from . import heuristic  # noqa: F401
from . import auto_learngene  # noqa: F401
from . import weight_selection  # noqa: F401
from . import mimetic  # noqa: F401
from . import tleg  # noqa: F401
from . import peg  # noqa: F401
from . import cluster_learngene  # noqa: F401
from . import mm_lg  # noqa: F401
from . import learngene_pool  # noqa: F401
from . import sn_net  # noqa: F401
from . import sws  # noqa: F401
from . import wave  # noqa: F401
from . import lets  # noqa: F401
