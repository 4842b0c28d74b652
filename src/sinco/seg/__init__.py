"""The segmentation network g_phi of the SINCO regularizer: a MONAI 2-D U-Net, its training and checkpoints."""
