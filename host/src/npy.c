typedef int lk__placeholder_npy;
