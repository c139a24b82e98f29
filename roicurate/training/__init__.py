"""``roicurate train``, in modules that import downwards only (each imports nothing of the ones above it):

* ``data``: labelled ROI sets, the split by recording, crops and labels stacked for the network (a leaf);
* ``fit``: the training loop (augmentation, class balance, schedule, early stopping, checkpoints, freezing);
* ``arch``: which network, crop and classes a run trains, and where its weights start;
* ``search``: the random hyper-parameter search;
* ``outoflab``: labs, and the leave-one-lab-out operating point;
* ``operating_point``: calibration, shape prior and threshold of a trained network, and the card's record;
* ``train``: the phases of one run, from the labelled sets to the saved weights and card.
"""
