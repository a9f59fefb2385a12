"""LMs that reason in sentence-embedding space: sentence autoencoders and the latent model
(model), data layouts (data), training stages (training), discretized and continuous inference
(inference), SentenceLens (lens), ProsQA- and Blocksworld-style tasks (prosqa, blocksworld) and
the pipeline (experiment). See README.md."""
