"""A generic LLM judge, apart from any metric that uses one: the prompts it reads and the
parser of its answers (``prompts``), an OpenAI-compatible HTTP client (``client``), a judge
model run locally (``local``) and a cache of its answers owned by its user (``cache``).
Metrics supply their own rubric and settings; nothing here names a metric."""
