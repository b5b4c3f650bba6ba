"""The MetaStudio API: the client (`client`), its signer (`signing`), typed answers
(`models`), what job states and review codes mean (`states`), and where to reach the service
and how to sign in (`settings`)."""
