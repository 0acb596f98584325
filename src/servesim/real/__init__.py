"""servesim against live OpenAI-compatible engines: the emulator (``serve``), the load driver and
recorder (``observe``), calibration probes and the fidelity replay. Nothing here runs at import."""
