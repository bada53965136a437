"""Starting the processes of tests: the zygote client."""
