"""Hard-negative generation (paper Sec. 3.2): fill masked levels with an LLM or at random.

Modules, one concept each:

* ``config`` -- :class:`GenerateConfig`, every option of a run;
* ``validation`` -- pure checks of negatives and their reason codes;
* ``prompts`` -- versioned templates (``negforge.prompts``) and the answer schema;
* ``answers`` -- parsing an answer into fills per level;
* ``sampling`` -- seeded per-query randomness: dictionary sample, random baseline;
* ``client`` -- one client layer: the openai SDK for OpenAI-compatible backends, litellm else;
* ``errors``, ``retry``, ``ratelimit`` -- call failures, backoff, --rpm/--tpm buckets;
* ``cache``, ``journal`` -- the response cache and the resumable run journal;
* ``accounting``, ``progress`` -- tokens, cost, the run summary and the progress bar;
* ``filling`` -- one query: ask, validate, re-ask, --on-invalid;
* ``masked_input`` -- the masked artifact read into one job per query;
* ``runner`` -- :func:`generate_negatives`, the resumable concurrent run;
* ``estimate`` -- :func:`estimate_generation`, ``--dry-run``'s calls, tokens and cost;
* ``local_server`` -- llama.cpp's server with SmolLM2 (``negforge serve-local``).

Heavy imports (openai, litellm) happen only when a backend is used.
"""
