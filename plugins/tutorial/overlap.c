typedef int lk__placeholder_overlap;
