# clé de l'API (ne pas publier)
api = 'ghp_f60HPCgRRREXDtRTrDHWhPTarQYRk9dsdAGk'
# fin du fichier é
