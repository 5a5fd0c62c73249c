"""``hubctl``, the command line for clinics, operators and developers."""
