typedef int lk__placeholder_runtime;
