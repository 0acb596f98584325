"""A learned output-length predictor: prompt text -> features -> a head -> tokens.

Modules (each imported only when used, so ``servesim.predictors`` loads no scikit-learn):

- ``data``: the prompts JSONL (``prompt_id``, ``instruction``) and the lengths CSV
  (``prompt_id,generator,output_tokens``), joined for one serving model;
- ``features``: the embedders (``tfidf``: hashed word and character n-grams with IDF weights;
  ``neural``: the optional ``model2vec`` / ``minilm`` adapter of the ``[predict]`` extra), always
  with the log prompt length appended;
- ``heads``: ``bins`` (log-scale length bins, expected-value decoding), ``regression`` (ridge on
  log length) and ``rank`` (a pairwise linear ranker mapped to lengths by quantile matching);
- ``model``: training, saving and loading a model folder with a format version;
- ``evaluate``: MAE, Spearman, Kendall, bin accuracy, the prompt-length baseline, K-fold CV
  split by prompt;
- ``predictor``: the ``{kind = "learned"}`` predictor the simulator draws from.
"""
