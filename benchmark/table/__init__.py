"""From finished runs to Table 1: aggregation with standard errors and Welch's tests
(``aggregate``, ``python -m benchmark.table``), figures (``figures``) and the trajectory
reports of the studies (``studies``). Reads result files only; trains nothing."""
