"""The method's named choices, in a module that imports nothing, so that DTPConfig and the command
line can name them without loading torch.

dtp.core implements the AGGREGATIONS; dtp.regions registers the REGION_SOURCES at import (more can be
registered at run time, and DTPConfig accepts those too); a sweep runs SWEEP_ABLATIONS by default.
"""

AGGREGATIONS = ("mean", "max", "sum", "first", "last")  # how A_t combines over the action tokens
REGION_SOURCES = ("attention", "similarity", "oracle", "mask", "oracle_removal")  # where G comes from (built in, in order)
SWEEP_ABLATIONS = ("random_anywhere", "random_outside", "no_smoothing", "similarity", "oracle")
ROBOT_MASK_SOURCES = ("off", "segmentation", "motion")  # where an embodiment-aware G finds the robot (dtp.robot_mask)
