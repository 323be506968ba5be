"""White-box attacks (APGD-CE, APGD-DLR, FAB) and the evaluation of Table 3 on the deployed ensemble."""
