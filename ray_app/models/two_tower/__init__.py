"""Two-tower retrieval model (Yi et al., RecSys 2019) in PyTorch, trained on Ray Train.

Laid out like torchrec's ``examples/retrieval``, as separate pieces with a tested conversion
between them:

* :mod:`.features` - :class:`FeatureEncoder` and :class:`TowerInputs`: feature frames → codes;
* :mod:`.net` - :class:`TwoTowerNet` (the towers), :class:`TwoTowerTask` (net + in-batch
  softmax loss with log-Q correction) and :class:`TwoTowerIndex` (the serving form: embeddings
  computed once, scoring is a matmul);
* :mod:`.training` - :func:`train`, in-process or on Ray Train, over one shared epoch loop;
* :mod:`.recommender` - :class:`TwoTower`, the :class:`~ray_app.models.base.Recommender`.
"""

from ray_app.models.two_tower.config import TwoTowerConfig
from ray_app.models.two_tower.features import FeatureEncoder, TowerInputs
from ray_app.models.two_tower.net import TowerDims, TwoTowerIndex, TwoTowerNet, TwoTowerTask
from ray_app.models.two_tower.recommender import TwoTower
from ray_app.models.two_tower.training import EpochHook, Trained, train, training_columns

__all__ = [
    "EpochHook",
    "FeatureEncoder",
    "TowerDims",
    "TowerInputs",
    "Trained",
    "TwoTower",
    "TwoTowerConfig",
    "TwoTowerIndex",
    "TwoTowerNet",
    "TwoTowerTask",
    "train",
    "training_columns",
]
