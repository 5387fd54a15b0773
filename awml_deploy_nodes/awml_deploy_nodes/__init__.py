"""ROS 2 glue for awml_deploy: parameters -> pipeline, message -> numpy -> pipeline -> message."""
