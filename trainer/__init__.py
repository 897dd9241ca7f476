"""negforge.trainer: Moment-DETR / QD-DETR with SHINE losses (installed from trainer/)."""
