"""Reports: the plots and tables a person reads."""
