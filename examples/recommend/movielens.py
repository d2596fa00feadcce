"""MovieLens end to end: climb the recommendation ladder, fold in a new user, find films like a
text, then serve it (`frugalml serve runs/movielens/refit/bundle`).

    pip install 'frugalml[recommend]'
    python examples/recommend/movielens.py
"""

from frugalml.apps import recommend

data = recommend.movielens()  # 671 users, 9,066 films, every rating a positive
parts = recommend.split(data, how="random", test_frac=0.25, cold_frac=0.1, seed=0)
result = recommend.fit(parts, out="runs/movielens", strategies=("popularity", "item_knn", "ease"))
print(result.bundle.manifest.strategy, recommend.evaluate(result.bundle, parts.test).to_dict())

model = result.bundle.predictor  # a Recommender
history, unknown = model.item_indices(["1", "260", "1196", "1210", "2571"])  # five ratings
top, _ = model.recommend(history, 10, exclude=history)  # no retraining
print([model.catalogue.texts[i] for i in top])
