"""FedAvg of a logistic-regression model across the four UCI Heart Disease hospitals,
with securefl's SecAgg+ inside Flower: the server learns only the weighted mean."""
