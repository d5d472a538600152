typedef int lk__placeholder_pool;
