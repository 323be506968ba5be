"""Training CEAR members: recipes (MemberConfig) and the Keras trainers (Gaussian augmentation, the DTS/VGA Distiller)."""
