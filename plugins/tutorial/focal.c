typedef int lk__placeholder_focal;
