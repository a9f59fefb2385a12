"""Self-Explore: first-pit step exploration and fine-grained preference training for math
reasoning (experiment), its pair building (data) and a procedural word-problem task
(word_problems). See README.md."""
