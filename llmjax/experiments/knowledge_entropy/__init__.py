"""Knowledge entropy of FFN memories across pretraining (entropy), over checkpoint series
(series), knowledge injection with acquisition and forgetting (injection), resuscitation, the
experiment (experiment) and its tiny end-to-end demonstration (demo). See README.md."""
