"""The one training loop (loop) and its parameters (params), the batch transforms on the training
device (transforms), the head trained on backbone features computed once (features), the train
recipe that kinds train, hpo and retrain share (recipe) with its written summary (summary), and
trained models back from a best.pt (trained). Imports go one way: training uses models, never
the reverse."""
